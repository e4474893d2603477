"""An example voxpipe ASR backend package: ``example-energy``.

Installed, it registers :class:`EnergyBurstASR` under the entry-point group
``voxpipe.asr_backends``; see the README beside this package.
"""

from .energy import EnergyBurstASR

__all__ = ["EnergyBurstASR"]
