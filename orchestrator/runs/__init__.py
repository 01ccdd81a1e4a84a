"""A run from start to end: the experiment file (``experiment``), planning and launching
(``launch``), preparing the directory, store, repository and worktrees (``prepare``), the loop
that watches, supervises and finishes (``loop``, ``watcher``), the final status (``outcome``) and
what a run leaves behind (``exports``, ``finalmerge``). ``resources`` finds shipped templates and
experiments."""
