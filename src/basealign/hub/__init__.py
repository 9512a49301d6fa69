"""`basealign push`: publish a run to the Hugging Face Hub with its model card."""
