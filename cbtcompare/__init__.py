"""CBTCompare's headless core: models, sessions, judging, rating, statistics. No gradio outside ui/."""

__version__ = "0.1.0"
