"""The rendered "web" corpus of the mini world: captioned glyph images (the LAION analogue).

Each sample is one glyph (a digit, a letter or a symbol) drawn from a font that ships with
matplotlib, in the image format of scikit-learn's handwritten digits (8x8, values 0..16),
with a web-alt-text-like caption that names the glyph and, each with some probability, its
style and context. Sample ``i`` of a seed is the same whatever else is rendered with it.

* :mod:`~lib.mini.corpus.glyphs`: the glyphs, their names and sampling weights;
* :mod:`~lib.mini.corpus.captions`: the caption grammar and its vocabulary;
* :mod:`~lib.mini.corpus.fonts`: the fonts and each glyph's signed distance field;
* :mod:`~lib.mini.corpus.attributes`: the attributes of sample ``i`` (style, context, draws);
* :mod:`~lib.mini.corpus.render`: bitmaps from attributes, ``render(ids, seed)``, ``to_pil``;
* :mod:`~lib.mini.corpus.store`: ``write_corpus`` / ``load_corpus`` (the zoo stage's files);
* :mod:`~lib.mini.corpus.cli`: ``python -m lib.mini.corpus --out DIR --n N --seed S``.
"""
