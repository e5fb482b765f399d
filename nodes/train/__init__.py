"""Orchestration of the training nodes: plain functions the nodes call (config, conditioning, loops)."""
