"""Where and how models run: devices, quantization, placement over GPUs and host RAM, compilation."""
