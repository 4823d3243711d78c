"""Helpers shared by the whole test suite (test files never import each other).

- ``datasets``: tiny handmade COCO-format folders; ``download_server``: a local HTTP server.
- ``jobs``: launching jobs in a subprocess with a hang guard that kills the whole process tree;
  ``harness``: the small resilience training script those jobs run.
- ``cli`` / ``cli_standin``: ``python -m ssd_train`` / ``ssd-train`` in a subprocess, or the same
  entry point with the tiny stand-in network; ``prelaunch``: such a process forked from one that
  has imported torch already (the session's ``prelaunched`` fixture: ~8 s less per launch).
- ``logs``: ``:::MLLOG`` records and ``metrics.jsonl``.
- ``standin`` / ``trainer_runs``: a tiny network with SSD300's interface and in-process runs of
  the real ``Trainer`` on a few synthetic images (scripted mAPs where the test is about
  scheduling); ``states``: comparing nested training states.
- ``torch_files``: fixed byte patterns that make ``torch.load`` fail in each of its ways.
- ``mlperf_reference``, ``coco_reference``, ``mlperf``: independent transcriptions of the
  reference code, pycocotools scoring, a real submission's hyperparameters;
  ``eval_dist_worker``: one rank of the distributed evaluation tests.
- ``infra`` / ``infra_standins``: paths and script loading for infra/, stand-in cluster tools.
- ``predict``: a synthetic val set and exported random weights for ``ssd-predict``;
  ``wandb_offline``: an offline wandb run confined to the test's folder.
"""
