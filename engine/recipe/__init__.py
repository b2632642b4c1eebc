"""Reading a whole run as the recipe it follows: the report, agreement of a reward
model with people's rankings, and the next round of iterated RLHF. Torch-free;
reads the store and writes spec text.
"""
