-- A rotated webhook secret keeps signing beside the new one until previous_secret_until, so that
-- receivers can move to the new secret without rejecting a delivery (Standard Webhooks: one
-- signature per secret in the webhook-signature header).
ALTER TABLE webhooks ADD COLUMN previous_secret text, ADD COLUMN previous_secret_until timestamptz;
