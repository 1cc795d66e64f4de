package replicate

// RewindStartedModifying exports rewindStartedModifying to the external
// tests.
var RewindStartedModifying = rewindStartedModifying
