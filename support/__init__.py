"""
What the scripts need and SCoRe does not: a reader of the method never needs to open these files.
The method is the top level (rollout.py, reward.py, reinforce.py, stage1.py, stage2.py, evaluate.py,
model.py); each file here is one concept behind it.

    settings.py       Config from the command line, the settings both stages share, the presets, Table 5
    checkpoints.py    atomic, resumable checkpoints (--resume true) and the JSONL logs
    distributed.py    torchrun: process group, all_gather, gradient averaging (no-ops without torchrun)
    sharding.py       --shard true: FSDP2 shards of the policy and reference, gathered for sampling and checkpoints
    training_log.py   step 7 of both stages: the printed line, the JSONL record, decoded samples
    tasks.py          the tasks' data: arithmetic made in-process, MATH, MBPP and HumanEval downloaded once
    chat_template.py  the chat template's tokens around each turn, checked against the model's own template
    sampler.py        the sampler: a decode loop with a static KV cache that records its log-probs
    math_answers.py   reading and normalising MATH answers (reward.is_equiv's rules)
    sympy_worker.py   the sympy comparison, in a child process killed at its deadline
    sandbox.py        runs model-written programs against their tests, in a process with limits
    analysis.py       the paper's analyses on recorded results: edit distance, majority vote, tables, plots
    tiny.py           the CPU tutorial's tiny model and its supervised warm-up
    measure.py        bench.py's timers, memory counter and hardware denominators
"""
