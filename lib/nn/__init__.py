"""Neural-network building blocks of the study: auxiliary norms for synthetic images
(:mod:`lib.nn.aux_norm`), batch augmentation (:mod:`lib.nn.augment`), learning-rate schedules
(:mod:`lib.nn.schedule`) and the small classifiers for 8x8 images, registered with timm: the
CNN (:mod:`lib.nn.mini_cnn`) and the ViT (:mod:`lib.nn.mini_vit`)."""
