"""Small helpers shared by every layer: rank-aware logging, image reading, drawing."""
