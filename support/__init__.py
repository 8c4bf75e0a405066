"""
What the scripts need and SCoRe does not: a reader of the method never needs to open these files.
Each file here is one concept behind the top-level scripts.

    settings.py       Config from the command line (parse_config), UsageError, require_device
    checkpoints.py    atomic, resumable checkpoints (--resume true) and the JSONL logs
    distributed.py    torchrun: process group, all_gather, gradient averaging (no-ops without torchrun)
    chat_template.py  the chat template's tokens around each turn, checked against the model's own template
    tasks.py          the tasks' data: arithmetic made in-process, MATH, MBPP and HumanEval downloaded once
    sampler.py        the sampler: a decode loop with a static KV cache that records its log-probs
    math_answers.py   reading and normalising MATH answers (reward.is_equiv's rules)
    sympy_worker.py   the sympy comparison, in a child process killed at its deadline
    sandbox.py        runs model-written programs against their tests, in a process with limits
    analysis.py       the paper's analyses on recorded results: edit distance, majority vote, tables, plots
    tiny.py           the CPU tutorial's tiny model
"""
