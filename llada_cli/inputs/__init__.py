"""What the model reads: the text tokenizer, the prompt templates, the image preprocessing."""
