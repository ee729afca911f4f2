"""The mini world: the offline analogue of the paper setting (DESIGN.md, "The mini world").

* :mod:`lib.mini.corpus` renders the captioned glyph corpus (the "web" data);
* :mod:`lib.mini.t2i` trains and serves the mini text-to-image model on it;
* :mod:`lib.mini.clip` trains the mini CLIP (open_clip, MiniLM text tower) on it.

Its classifiers are ordinary timm architectures for 8x8 images (:mod:`lib.nn.mini_cnn`).
"""
