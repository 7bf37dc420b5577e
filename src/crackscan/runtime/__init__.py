"""Running a model file, whatever its format: runners behind one protocol, the metadata in
and out of files, and the predictor that decodes outputs by task."""
