"train_run survives a killed process: resume continues from the last checkpoint, with the LR found by the first run,\nand gives the per-epoch losses of a run never interrupted."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import pytest

SCRIPT = r'''
import os, sys
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
from pathlib import Path
from unetlearn.data import seg_dataloaders
from unetlearn.train import train_run
out, isbi = sys.argv[1], Path(sys.argv[2])
imgs = sorted((isbi/'image').glob('*.png'), key=lambda p: int(p.stem))[:12]
def data(size):
    return seg_dataloaders(imgs, [isbi/'label'/p.name for p in imgs], foreground=0, size=size, bs=4, progress=False, seed=0)
train_run(data, out=out, arch='smp:Unet:resnet18', pretrained='none', epochs=6, freeze_epochs=0, lr='auto',
          lr_find_iters=8, size=32, n_preview=2, resume='--resume' in sys.argv)
'''


def _env():
    return {**os.environ, 'MPLBACKEND': 'Agg', 'OMP_WAIT_POLICY': 'PASSIVE', 'PYTHONUNBUFFERED': '1'}


def test_kill_then_resume(tmp_path, shared_data):
    from unetlearn.train import read_checkpoint
    script, out = tmp_path/'run.py', tmp_path/'run'
    script.write_text(SCRIPT)
    cmd = [sys.executable, str(script), str(out), str(shared_data/'isbi2012_em')]
    log = open(tmp_path/'first.log', 'w')
    p = subprocess.Popen(cmd, env=_env(), stdout=log, stderr=subprocess.STDOUT)
    ck, t0 = out/'checkpoints'/'last.pth', time.time()
    try:
        while not ck.exists():  # written atomically: once it exists it is complete
            if p.poll() is not None:
                pytest.fail(f"training ended (rc {p.returncode}) before its first checkpoint:\n{(tmp_path/'first.log').read_text()[-3000:]}")
            if time.time() - t0 > 600: pytest.fail("no checkpoint after 600 s")
            time.sleep(0.05)
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=60)
        t_kill = time.time()
    finally:
        if p.poll() is None: p.kill()
        log.close()
    saved = read_checkpoint(ck)
    assert saved['stage'] == 0 and saved['epoch'] < 5, "killed too late to test a resume mid-way"
    assert not (out/'model.pth').exists() and (out/'lr_find.png').exists()

    r = subprocess.run(cmd + ['--resume'], env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert f"epoch {saved['epoch'] + 2}/6" in r.stdout and 'resuming' in r.stdout, r.stdout[-3000:]
    assert 'suggestions' not in r.stdout  # no second LR search: the first run's LR is reused
    m = json.loads((out/'metrics.json').read_text())
    assert m['resumed_from'] == {'stage': 0, 'epoch': saved['epoch']}
    assert m['lr'] == pytest.approx(saved['settings']['lr']) and m['lr_rule'] == saved['settings']['lr_rule'] != 'given'
    rows = m['history']
    assert [h['stage_epoch'] for h in rows] == list(range(6))
    n_done = saved['epoch'] + 1
    assert all(h['timestamp'] < t_kill for h in rows[:n_done])  # kept from the killed run, not retrained
    assert all(h['timestamp'] > t_kill for h in rows[n_done:])  # only the remaining epochs ran after the kill
    for name in ('model.pth', 'config.json', 'history.csv', 'loss.png', 'metrics.png', 'lr_schedule.png', 'predictions.png'):
        assert (out/name).exists(), name
    from unetlearn.export import load_seg_model
    load_seg_model(out)  # the final model loads without the training code
    assert not (out/'checkpoints').exists()  # after success: one copy of the weights, no optimizer state

    # the same command never interrupted: kill -9 and --resume replay it exactly (random states are in the checkpoint)
    whole = tmp_path/'whole'
    r = subprocess.run([sys.executable, str(script), str(whole), str(shared_data/'isbi2012_em')], env=_env(),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    ref = json.loads((whole/'metrics.json').read_text())['history']
    for k in ('train_loss', 'valid_loss', 'dice'):
        assert [h[k] for h in rows] == pytest.approx([h[k] for h in ref], abs=1e-5), k


def test_cli_epochs_count_every_epoch(tmp_path, shared_data):
    "`unetlearn train --epochs 3 --freeze-epochs 1` with a pretrained encoder trains 3 epochs: 1 frozen, then 2."
    import torch, torchvision
    weights = tmp_path/'resnet18.pth'
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)  # a local 'pretrained' file, no download
    isbi, out = shared_data/'isbi2012_em', tmp_path/'run'
    cmd = [sys.executable, '-m', 'unetlearn', 'train', '--images', str(isbi/'image'), '--masks', str(isbi/'label'),
           '--foreground', '0', '--size', '32', '--bs', '4', '--arch', 'resnet18', '--pretrained', str(weights),
           '--epochs', '3', '--freeze-epochs', '1', '--lr', '1e-3', '--out', str(out)]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    m = json.loads((out/'metrics.json').read_text())
    assert [h['stage_name'] for h in m['history']] == ['frozen', 'unfrozen', 'unfrozen']
    assert m['best']['epoch'] >= 1 and m['last']['epoch'] == 2  # the frozen warm-up epoch is never crowned
    assert 'saved the weights of epoch' in r.stdout and 'last epoch 2' in r.stdout
