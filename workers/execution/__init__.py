"""Execution on a worker: the executor (claim, agent, record), heartbeats, assessment, agent
runtimes, providers and tools."""
