"""The privacy layer: the only code that imports OpenDP.

- :mod:`~dpmap._privacy.bounding`: the sensitivities that the contribution bounds imply.
- :mod:`~dpmap._privacy.noise`: the OpenDP measurements, their accounting and accuracy; every
  noisy value dpmap publishes is drawn here.
- :mod:`~dpmap._privacy.postprocess`: suppression, means and margins, computed from noisy
  values only.

The package is private (nothing here is public API); the names inside its modules are public
so that the designs, the release pipeline and the analyses can use them.
"""
