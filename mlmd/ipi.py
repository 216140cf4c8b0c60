"""i-PI: mlmd as an i-PI force client, through ASE's socket client.

i-PI (classical and path-integral MD, replica exchange, free-energy methods) runs the
nuclei; mlmd answers its force requests. i-PI sends positions and cell (bohr), the client
returns energy, forces and the virial ``-sigma V`` (Hartree units; ASE's
:class:`~ase.calculators.socketio.SocketClient` converts from eV and Å). Systems periodic
in all three directions send the model's virial; others send zero (an isolated system
under no external pressure), as ASE's client does.

Two steps::

    python -c "import mlmd.ipi, ase.io; mlmd.ipi.write_input('run', ase.io.read('cu.xyz'), 'cu', steps=1000)"
    cd run && i-pi input.xml &            # the server; it creates the socket /tmp/ipi_cu
    python -m mlmd.ipi MODEL.pt init.xyz --unix cu

``--port N [--host H]`` connects over TCP instead (``<ffsocket mode='inet'>``). The
metatomic export (``mlmd export ... --format metatomic``) also runs in i-PI's own
driver: ``i-pi-py_driver -m metatomic -u -a cu -o template=init.xyz,model=MODEL-mta.pt``.
"""

import argparse
import socket
import time
from pathlib import Path
from typing import Optional, Sequence

from .errors import MLMDError
from .io import PathLike, atomic_write

#: i-PI's and ASE's unix sockets live at this prefix plus the address.
SOCKET_PREFIX = "/tmp/ipi_"

INPUT_TEMPLATE = """<simulation verbosity='{verbosity}' safe_stride='{steps}'>
  <output prefix='{prefix}'>
    <properties stride='{stride}' filename='out'> [ step, time{{femtosecond}}, conserved{{ase}}, temperature{{kelvin}}, potential{{ase}}{virial} ] </properties>
    <trajectory filename='pos' stride='{stride}' format='ase'> positions </trajectory>
    <trajectory filename='frc' stride='{stride}' format='ase'> forces </trajectory>
  </output>
  <total_steps> {steps} </total_steps>
  <prng><seed> {seed} </seed></prng>
  <ffsocket name='mlmd' mode='{mode}'>
    <address> {address} </address>{port}
    <latency> 1e-4 </latency>
  </ffsocket>
  <system>
    <initialize nbeads='{nbeads}'>
      <file mode='ase'> {structure} </file>
      <velocities mode='thermal' units='kelvin'> {temperature_K} </velocities>
    </initialize>
    <forces><force forcefield='mlmd'> </force></forces>
    <motion mode='dynamics'>
      <dynamics mode='{ensemble}'>
        <timestep units='femtosecond'> {timestep_fs} </timestep>{thermostat}
      </dynamics>
    </motion>
    <ensemble><temperature units='kelvin'> {temperature_K} </temperature></ensemble>
  </system>
</simulation>
"""


def input_xml(address: str, steps: int, timestep_fs: float = 1.0, temperature_K: float = 300.0,
              thermostat_tau_fs: Optional[float] = None, nbeads: int = 1, port: Optional[int] = None,
              structure: str = "init.xyz", periodic: bool = True, stride: int = 1, seed: int = 12345,
              prefix: str = "simulation", verbosity: str = "quiet") -> str:
    """An i-PI input: MD of ``structure`` (extended XYZ, Å) with forces from a socket client.

    NVE from velocities drawn at ``temperature_K``, or NVT (i-PI's ``svr`` thermostat, or
    ``pile_g`` for ``nbeads > 1``) when ``thermostat_tau_fs`` is given. Every ``stride``
    steps it writes ``PREFIX.out`` (time fs, conserved and potential energy eV, temperature
    K, and for ``periodic`` systems ``virial_md`` = virial/V in eV/Å³), ``PREFIX.pos_*.extxyz``
    (Å) and ``PREFIX.frc_*.extxyz`` (eV/Å); eV and Å in i-PI's ``ase`` units (ASE's constants,
    those the client converts with, so the files hold the client's numbers). ``port``: a TCP socket at host ``address``
    instead of the unix socket ``/tmp/ipi_ADDRESS``.
    """
    if steps < 1 or nbeads < 1 or stride < 1 or timestep_fs <= 0:
        raise MLMDError("i-PI input: steps, nbeads and stride must be >= 1 and timestep_fs > 0")
    thermostat = ""
    if thermostat_tau_fs is not None:
        mode = "pile_g" if nbeads > 1 else "svr"
        thermostat = (f"\n        <thermostat mode='{mode}'><tau units='femtosecond'> {thermostat_tau_fs} </tau>"
                      "</thermostat>")
    return INPUT_TEMPLATE.format(
        verbosity=verbosity, steps=steps, prefix=prefix, stride=stride, seed=seed, nbeads=nbeads,
        virial=", virial_md{ase}" if periodic else "", mode="unix" if port is None else "inet",
        address=address, port="" if port is None else f"\n    <port> {port} </port>", structure=structure,
        temperature_K=temperature_K, timestep_fs=timestep_fs, thermostat=thermostat,
        ensemble="nve" if thermostat_tau_fs is None else "nvt")


def write_input(folder: PathLike, atoms, address: str, steps: int, **options) -> Path:
    """Write ``init.xyz`` (``atoms``) and ``input.xml`` (:func:`input_xml` with ``options``) into
    ``folder``; returns the path of ``input.xml``. i-PI runs it with ``i-pi input.xml`` from there."""
    from ase.io import write

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    structure = folder / "init.xyz"
    with atomic_write(structure) as stream:
        write(stream, atoms, format="extxyz")
    path = folder / "input.xml"
    options.setdefault("periodic", bool(atoms.pbc.all()))
    with atomic_write(path) as stream:
        stream.write(input_xml(address, steps, structure=structure.name, **options))
    return path


def connect(address: str, port: Optional[int] = None, wait_s: float = 60.0):
    """An ASE :class:`~ase.calculators.socketio.SocketClient` connected to i-PI at the unix socket
    ``/tmp/ipi_ADDRESS`` (or host ``address``, TCP ``port``), retried until i-PI is up or ``wait_s`` pass."""
    from ase.calculators.socketio import SocketClient

    deadline = time.monotonic() + wait_s
    while True:
        try:
            if port is None:
                return SocketClient(unixsocket=address)
            return SocketClient(host=address, port=port)
        except (FileNotFoundError, ConnectionRefusedError, socket.timeout) as exc:
            if time.monotonic() > deadline:
                where = f"{SOCKET_PREFIX}{address}" if port is None else f"{address}:{port}"
                raise MLMDError(f"no i-PI server answered at {where} within {wait_s:g} s ({exc}); start "
                                "`i-pi input.xml` first, with the same address in its <ffsocket>") from exc
            time.sleep(0.2)


def run_client(model, atoms, address: str, port: Optional[int] = None, device: str = "cpu",
               wait_s: float = 60.0) -> int:
    """Serve i-PI's force requests for ``atoms`` (its species and pbc; i-PI sets positions and cell)
    with ``model`` (what :func:`mlmd.load_model` takes) until i-PI ends the run; returns the
    number of force calls served."""
    from .ase.calculator import MLMDCalculator

    atoms = atoms.copy()
    atoms.calc = MLMDCalculator(model, device=device)
    client = connect(address, port, wait_s)
    calls = 0
    for _ in client.irun(atoms, use_stress=bool(atoms.pbc.all())):
        calls += 1
    return calls


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m mlmd.ipi MODEL STRUCTURE (--unix NAME | --port N [--host H])``."""
    from .io import read_structure

    parser = argparse.ArgumentParser(prog="python -m mlmd.ipi", description="mlmd as an i-PI force client")
    parser.add_argument("model", help="model file or shipped model name")
    parser.add_argument("structure", help="structure file (species and pbc; i-PI sends positions and cell)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--unix", metavar="NAME", help="i-PI's unix socket address (/tmp/ipi_NAME)")
    where.add_argument("--port", type=int, help="i-PI's TCP port")
    parser.add_argument("--host", default="localhost", help="i-PI's host for --port")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--wait", type=float, default=60.0, help="seconds to wait for i-PI to open its socket")
    args = parser.parse_args(argv)
    try:
        atoms = read_structure(args.structure)
        address = args.unix if args.port is None else args.host
        calls = run_client(args.model, atoms, address, args.port, args.device, args.wait)
    except MLMDError as exc:
        parser.exit(2, f"error: {exc}\n")
    print(f"i-PI ended the run after {calls} force calls")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
