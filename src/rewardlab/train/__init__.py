"""Training: the GRPO-family losses and the loop that applies them."""
