"""Neural-network building blocks of the study: auxiliary norms for synthetic images
(:mod:`lib.nn.aux_norm`), batch augmentation (:mod:`lib.nn.augment`), learning-rate schedules
(:mod:`lib.nn.schedule`) and the small CNN for 8x8 images (:mod:`lib.nn.mini_cnn`)."""
