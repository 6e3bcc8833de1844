"""Run an experiment grid (conf/grid/*.yaml) through its recipe and write GRID.md.

    egs2/TEMPLATE/asr1/grid.sh conf/grid/mini_an4.yaml [--workdir DIR] [recipe options ...]
    python -m espnet_early_exit.bin.run_grid conf/grid/mini_an4.yaml [--root DIR] [--only a,b] [--jobs N]
        [--table_only] [--dry_run] -- [recipe options ...]

--root: the recipe root the grid file's relative paths (recipe, configs) start from; by default
the checkout this command lies in (grid.sh passes it).

Options this command does not know are passed to the recipe (the grid's run.sh, which passes
them to egs2/TEMPLATE/asr1/asr.sh), e.g. --workdir, --ngpu, --nj, --inference_nj.
Output: <workdir>/<expdir>/grid_<name>/GRID.md (plus configs/, init/, logs/ there).
See docs/grid.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from espnet_early_exit.bin._cli import setup_logging
from espnet_early_exit.grid import GridRunner, load_grid, write_grid_md

# the checkout this command lies in: <root>/espnet_early_exit/bin/run_grid.py
CHECKOUT_ROOT = Path(__file__).resolve().parents[2]


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        description="Run the experiment grid of a recipe and write GRID.md",
        usage="%(prog)s GRID.yaml [--root DIR] [--only NAME,...] [--jobs N] [--table_only] [--dry_run] "
              "[recipe options]",
    )
    p.add_argument("grid", help="grid file, e.g. conf/grid/mini_an4.yaml")
    p.add_argument("--root", type=Path, default=CHECKOUT_ROOT,
                   help="the folder the grid file's relative paths start from (default: %(default)s)")
    p.add_argument("--only", default="", help="comma-separated experiments to run (default: all)")
    p.add_argument("--jobs", type=int, default=1,
                   help="experiments run at the same time (a fine-tuned one waits for its source)")
    p.add_argument("--table_only", action="store_true", help="only (re)write GRID.md from what exists")
    p.add_argument("--dry_run", action="store_true", help="print the recipe calls, run nothing")
    return p


def main(cmd=None) -> int:
    setup_logging("INFO")
    args, recipe_args = get_parser().parse_known_args(cmd)
    if recipe_args and recipe_args[0] == "--":
        recipe_args = recipe_args[1:]
    grid = load_grid(args.grid, args.root)
    only = [n for n in args.only.split(",") if n]
    runner = GridRunner(grid, recipe_args, only=only, dry_run=args.dry_run,
                        log=lambda m: print(m, flush=True), jobs=args.jobs)
    if args.table_only:
        md = write_grid_md(grid, {x.name: runner.exp_dir(x) for x in grid.experiments},
                           runner.grid_dir / "GRID.md")
        print(md.read_text())
        return 0
    try:
        md = runner.run()
    except RuntimeError as e:
        print(f"ERROR: {e}", file=sys.stderr, flush=True)
        return 1
    if not args.dry_run:
        print(md.read_text(), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
