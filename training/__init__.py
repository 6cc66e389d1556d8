"""Training: the data protocol and shipped synthetic dataset, its validator, LoRA training and GGUF export.

Nothing here imports gradio, and nothing here may ever ship or generate from real patient data.
"""
