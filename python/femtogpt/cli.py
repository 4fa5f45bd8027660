"""The `femtogpt` command: train, generate, info.

Errors a user can fix (a missing file, a bad flag value, a corrupt checkpoint)
are printed as one line on stderr with exit status 2, not as a traceback.
"""

from __future__ import annotations

import argparse
import sys


def _info(args) -> int:
    import femtogpt as fg
    from femtogpt import _core

    stats = fg.memory_stats()
    lines = [
        f"femtogpt {fg.__version__}",
        f"python {sys.version.split()[0]}",
        f"cpu isa: {fg.cpu_isa()} (available: {', '.join(fg.available_isas())})",
        f"threads: {fg.get_num_threads()}",
        f"openmp: {'on' if _core.openmp_enabled() else 'off'}",
        f"opencl: {'compiled in' if _core.opencl_compiled() else 'not compiled in'}",
        "pool: {} (current {} B, peak {} B, reserved {} B, {} requests, {} hits, {} OS allocations)".format(
            "on" if stats["pooling"] else "off (FEMTOGPT_POOL=0)", stats["current_bytes"], stats["peak_bytes"],
            stats["reserved_bytes"], stats["alloc_requests"], stats["pool_hits"], stats["os_allocations"]),
    ]
    if args.peak:  # about 0.25 s a thread count
        n = fg.get_num_threads()
        rates = [f"{fg.fma_peak_gflops(t):,.1f}{' GFLOP/s' if i == 0 else ''} on {t} thread{'s' if t > 1 else ''}"
                 for i, t in enumerate(dict.fromkeys((n, 1)))]
        lines.append(f"fma peak ({fg.cpu_isa()}): {', '.join(rates)}")
    print("\n".join(lines))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="femtogpt", description="Train and sample small GPTs on the CPU.")
    sub = parser.add_subparsers(dest="command", metavar="{train,generate,info}")
    sub.required = True

    p_info = sub.add_parser("info", help="version, ISA, threads, OpenMP/OpenCL, pool statistics")
    p_info.add_argument("--peak", action="store_true",
                        help="also measure this CPU's multiply-add peak in GFLOP/s with the active kernels, on "
                             "the set threads and on 1 (about half a second; see fma_peak_gflops)")
    p_info.set_defaults(func=_info)

    from . import train as train_mod

    p_train = sub.add_parser("train", help="train a GPT on a text file (default: bundled Shakespeare)")
    train_mod.add_arguments(p_train)
    p_train.set_defaults(func=train_mod.main_from_args)

    from . import generate as gen_mod

    p_gen = sub.add_parser("generate", help="sample text from a checkpoint")
    gen_mod.add_arguments(p_gen)
    p_gen.set_defaults(func=gen_mod.main_from_args)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (FileNotFoundError, ValueError, TypeError, ImportError, IndexError, MemoryError, OSError) as e:
        print(f"femtogpt {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
