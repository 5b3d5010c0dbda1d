"""What a training run draws, and in which order (:mod:`~rewardlab.data.curriculum`)."""
