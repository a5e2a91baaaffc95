"""Datasets for fine-tuning: record formats (formats.py) and the registry with up-front validation (registry.py)."""
