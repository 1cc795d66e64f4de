package election

// SlowRenewal exports slowRenewal to the external tests.
var SlowRenewal = slowRenewal
