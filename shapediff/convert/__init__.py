"""Converters from other projects' released checkpoints (PVD, Point-E) to shapediff models.

``python scripts/convert.py pvd|pointe CHECKPOINT OUT_DIR`` writes a shareable model directory
(``config.json`` + ``model.safetensors`` + ``README.md``) that ``shapediff.load_model`` reads;
``docs/converting.md`` says what each converter does and what it cannot know from the checkpoint.
"""
