"""Model architectures shared by the tests and the benchmarks (tests/, bench/ put samples/ on
sys.path): `torch_models`, small PyTorch networks with seeded weights. The package itself imports
nothing, so it loads without torch; `torch_models` needs the [torch] extra."""
