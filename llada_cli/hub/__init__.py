"""Model references, the Hugging Face cache, downloads."""
