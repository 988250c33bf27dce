"""Write a merged (or any) PEFT LoRA adapter in the form a serving stack loads with the right scale."""
