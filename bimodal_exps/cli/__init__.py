"""Command-line interface of clip.py: flags (with legacy aliases), YAML configs, validation."""
