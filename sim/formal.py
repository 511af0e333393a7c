"""``python -m sim.formal``: prove the datapath against the integer contract and the host link against the protocol (SymbiYosys)."""

import json
import pathlib

from core.artifact import load_artifact
from core.boards import board as find_board
from core.cli import make_parser
from core.errors import UserError, cli_main
from core.fileio import write_atomic
from hw.plan import design_config

from . import proofs, protocol_proof

#: Every block ``--blocks`` takes: the datapath's (:data:`sim.proofs.BLOCKS`, proven per
#: HwConfig) and the host link's frame check (:mod:`sim.protocol_proof`, per network).
BLOCKS = (*proofs.BLOCKS, protocol_proof.ProtocolProof.block)
DEFAULT_BLOCKS = (*proofs.DEFAULT_BLOCKS, protocol_proof.ProtocolProof.block)


def parse_list(text, known, what):
    items = [t.strip() for t in text.split(",") if t.strip()]
    unknown = [t for t in items if t not in known]
    if unknown or not items:
        raise UserError(f"unknown {what} {', '.join(unknown) or repr(text)}; choose from {', '.join(known)}")
    return items


def configurations(names, *, random_count, seed, artifact=None, board=None):
    """``[(label, HwConfig)]``: the networks of :data:`sim.proofs.NETWORKS` named, ``random``
    small ones, and the design fitted to an artifact."""
    out = []
    for name in names:
        if name == "random":
            out += [(f"random {i}: {proofs.label(cfg)}", cfg)
                    for i, cfg in enumerate(proofs.random_configs(random_count, seed))]
        else:
            cfg = proofs.network_config(name)
            out.append((f"{name}: {proofs.label(cfg)}", cfg))
    if artifact is not None:
        cfg = design_config(load_artifact(artifact).network, board=find_board(board) if board else None)
        out.append((f"{pathlib.Path(artifact).parent.name or 'artifact'}: {proofs.label(cfg)}", cfg))
    return out


def table(results):
    """The results as a markdown table: block, config, mode, result, seconds."""
    lines = ["| block | config | mode | result | seconds |", "|---|---|---|---|---:|"]
    for r in results:
        lines.append(f"| {r.block} | {r.config} | {r.mode} {r.depth} | {r.status} | {r.seconds:.1f} |")
    return lines


@cli_main
def main(argv=None):
    parser = make_parser(
        "python -m sim.formal", __doc__.splitlines()[0].split(": ", 1)[1],
        epilog="examples:\n  python -m sim.formal                          # demo, MNIST and 20 random designs\n"
               "  python -m sim.formal --configs demo --blocks pe,requantizer\n"
               "  python -m sim.formal --artifact runs/demo-pow2/artifact.npz --configs random --random 0")
    parser.add_argument("--configs", default="demo,mnist,random",
                        help="designs to prove: demo, mnist (the built-in CNN's fitted designs), random (default: all)")
    parser.add_argument("--blocks", default=",".join(DEFAULT_BLOCKS),
                        help=f"blocks to prove, from {', '.join(BLOCKS)} (default: {','.join(DEFAULT_BLOCKS)}); "
                             "protocol is proven for the demo's, MNIST's and --random random links")
    parser.add_argument("--random", type=int, default=20, help="random small designs (default: 20)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random designs (default: 0)")
    parser.add_argument("--artifact", help="also prove the design hw.plan fits to this artifact")
    parser.add_argument("--board", help="the board whose defaults that design takes (e.g. icebreaker)")
    parser.add_argument("--jobs", type=int, default=2, help="solver runs at a time (default: 2)")
    parser.add_argument("--timeout", type=float, default=900,
                        help="seconds one job may take; a job past it is reported as timeout (default: 900)")
    parser.add_argument("--out", default="build/formal", help="job folders and results (default: build/formal)")
    args = parser.parse_args(argv)
    names = parse_list(args.configs, ("demo", "mnist", "random"), "config")
    blocks = parse_list(args.blocks, BLOCKS, "block")
    if args.random < 0 or args.jobs < 1 or args.timeout <= 0:
        raise UserError("--random must be >= 0, --jobs >= 1 and --timeout > 0")
    configs = configurations(names, random_count=args.random, seed=args.seed, artifact=args.artifact,
                             board=args.board)
    out = pathlib.Path(args.out)
    link_block = protocol_proof.ProtocolProof.block
    jobs = proofs.jobs_for(configs, [b for b in blocks if b != link_block])
    if link_block in blocks:
        jobs += protocol_proof.protocol_jobs(names, random_count=args.random, seed=args.seed)
    print(f"{len(jobs)} jobs, {args.jobs} at a time, in {out}", flush=True)

    def progress(r):
        print(f"  {r.status:>7} {r.seconds:7.1f} s  {r.block}  {r.config}", flush=True)

    results = proofs.run_proofs(jobs, out, workers=args.jobs, timeout=args.timeout, progress=progress)
    lines = table(results)
    print()
    print("\n".join(lines))
    failed = [r for r in results if not r.passed]
    for r in failed:
        print(f"\n{r.status}: {r.block} on {r.config}")
        if r.trace is not None:
            print(f"  trace: {r.trace}")
        if r.detail:
            print(f"  {r.detail}")
    write_atomic(out / "results.md", lambda tmp: pathlib.Path(tmp).write_text("\n".join(lines) + "\n"))
    record = [{"block": r.block, "config": r.config, "mode": r.mode, "depth": r.depth, "result": r.status,
               "seconds": round(r.seconds, 2), "trace": str(r.trace) if r.trace else None, "detail": r.detail}
              for r in results]
    write_atomic(out / "results.json", lambda tmp: pathlib.Path(tmp).write_text(json.dumps(record, indent=1)))
    total = sum(r.seconds for r in results)
    print(f"\n{len(results) - len(failed)} of {len(results)} proven ({total:.0f} s of solver time); "
          f"table in {out / 'results.md'}")
    if failed:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
