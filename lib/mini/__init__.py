"""The mini world: the offline analogue of the paper setting (README, "The mini world").

* :mod:`lib.mini.corpus` renders the captioned glyph corpus (the "web" data);
* :mod:`lib.mini.t2i` is the mini text-to-image model (a diffusers pipeline around one of
  the denoisers of :mod:`lib.mini.denoisers`: a UNet or a transformer), which
  :mod:`lib.mini.t2i_pretraining` trains on it (either denoiser) and
  :mod:`lib.mini.t2i_finetuning` fine-tunes on the real train digits (the Diversify study's
  baseline; the UNet), both with the loop of :mod:`lib.mini.t2i_training`;
* :mod:`lib.mini.clip` is the mini CLIP (open_clip, MiniLM text tower), which
  :mod:`lib.mini.clip_pretraining` trains on it;
* :mod:`lib.mini.text` encodes the corpus captions once with MiniLM for both.

Its classifiers are ordinary timm architectures for 8x8 images (:mod:`lib.nn.mini_cnn`).
"""
