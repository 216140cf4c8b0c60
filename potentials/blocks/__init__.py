"""Building blocks that several model families share, so that no family imports another.

- :mod:`.radial`: the polynomial cutoff envelope, the Bessel radial basis and the
  enveloped cubic B-spline radial basis (Å in, dimensionless out).
- :mod:`.bsplines`: uniform cubic B-splines (local and dense evaluation), the basis of
  the ``spline`` family and of the spline radial basis.
- :mod:`.irreps`: e3nn helpers: natural-parity irreps, the ``uvu`` tensor-product paths,
  the gated nonlinearity, building e3nn modules without pre-scripted pieces.
- :mod:`.interaction`: the equivariant message-passing layer of the ``equivariant``
  family and the ``forecaster``.
- :mod:`.readout`: per-species reference energies and the per-layer energy readouts.
- :mod:`.gaunt`: the Gaunt tensor product through a sphere grid and its grid matrices.
- :mod:`.repulsion`: short-range repulsion priors (``none``, switched ``zbl``) that every potential
  adds to its learned energy through :class:`potentials.base.Potential`.

The package imports nothing itself; import the module that holds the block.
"""
