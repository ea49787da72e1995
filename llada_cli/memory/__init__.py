"""The memory plan: what each stage needs, and where it goes on the GPUs at hand."""
