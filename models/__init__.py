"""CLIP backbone loading (open_clip), attribute text prompts, the VTF PAR model and its loss."""
