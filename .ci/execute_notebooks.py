"""Execute every notebook in place, keeping its outputs (the committed notebooks are read on GitHub like fastai's).

One process per notebook (`nbdev-test --save`: `#| slow` cells are skipped, as in CI), then `nbdev-clean`. Outside
Jupyter, fastprogress draws its bars as `\\r` frames into the text output; each stored line keeps what a terminal
would show at the end (the text after its last `\\r`), so a reader sees the results table, not 40 frames of a bar.

    python .ci/execute_notebooks.py                 # every notebook
    python .ci/execute_notebooks.py nbs/06_data.ipynb nbs/tutorials/camvid.ipynb
"""
import json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def terminal_text(text:str) -> str:
    "What a terminal shows of `text`: each line from its last carriage return on; lines left blank by a bar dropped."
    lines = []
    for line in text.split('\n'):
        shown = line.rsplit('\r', 1)[-1]
        if '\r' in line and not shown.strip(' █'): continue
        lines.append(shown)
    return '\n'.join(lines)


def tidy_outputs(path:Path) -> bool:
    "Reduce `\\r` frames in the stream outputs of the notebook at `path`; returns whether it changed."
    nb = json.loads(path.read_text())
    changed = False
    for c in nb['cells']:
        for o in c.get('outputs', []):
            if o.get('output_type') != 'stream': continue
            t = ''.join(o['text'])
            if '\r' not in t: continue
            o['text'] = terminal_text(t).splitlines(True)
            changed = True
    if changed: path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + '\n')
    return changed


def main(paths):
    env = {k: v for k, v in os.environ.items() if k != 'MPLBACKEND'}  # figures must reach the outputs
    env.setdefault('OMP_NUM_THREADS', '1')
    nbs = [Path(p) for p in paths] or sorted((ROOT/'nbs').glob('*.ipynb')) + sorted((ROOT/'nbs'/'tutorials').glob('*.ipynb'))
    failed = []
    for nb in nbs:
        t0 = time.time()
        r = subprocess.run([str(BIN/'nbdev-test'), str(nb), '--save'], cwd=ROOT, env=env, capture_output=True, text=True)
        if r.returncode: failed.append(nb); print(f"FAIL {nb}\n{r.stdout[-3000:]}{r.stderr[-3000:]}")
        else: print(f"ok   {nb} ({time.time() - t0:.0f} s){', bars tidied' if tidy_outputs(nb) else ''}", flush=True)
    subprocess.run([str(BIN/'nbdev-clean')], cwd=ROOT, check=True)
    return 1 if failed else 0


if __name__ == '__main__': sys.exit(main(sys.argv[1:]))
