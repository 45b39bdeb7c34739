"""Where the features come from: feature files, image sources (folder, manifest, CIFAR, the
built-in sample), frozen backbones, the on-disk feature cache, and `spec.SourceSpec`, the plain
value that names a source and turns into a loader. Every source ends in a
`dynacor.method.featureset.FeatureSet`."""
