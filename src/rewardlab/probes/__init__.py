"""Read-only looks inside a model, for ``rewardlab probe``.

* :mod:`~rewardlab.probes.lens`: the logit lens, every layer's hidden state read through the final norm and
  the LM head, so one sees at which depth an answer appears.
* :mod:`~rewardlab.probes.entropy`: the entropy of the next-token distribution along completions (fresh
  samples or a run's stored rollouts), its high-entropy "forking" tokens, and the same tokens under a
  second model.
* :mod:`~rewardlab.probes.prefill`: a prefix forced into the reply over an environment's examples, and how
  the reward and the parsed answers move against no prefix (tables and plot in ``prefill_view``).
* :mod:`~rewardlab.probes.linear`: logistic-regression probes per layer for a concept given as labelled
  texts (:mod:`~rewardlab.probes.concepts`: a JSONL file or the built-in ``hypernym``), beside a control on
  shuffled labels.
* :mod:`~rewardlab.probes.view`: their rich tables, PNG plots and JSON/CSV files.

Nothing here trains or writes to the run store.
"""
