package wake

import "testing"

// TestBroadcastSignalAll: SignalAll wakes the watchers of every key (a listener that reconnected may have
// missed any of them), and later watches wait again.
func TestBroadcastSignalAll(t *testing.T) {
	b := NewBroadcast()
	one, two := b.Watch("op-1"), b.Watch("op-2")
	b.SignalAll()
	for name, c := range map[string]<-chan struct{}{"op-1": one, "op-2": two} {
		select {
		case <-c:
		default:
			t.Errorf("the watcher of %s was not woken", name)
		}
	}
	select {
	case <-b.Watch("op-1"):
		t.Error("a watch taken after SignalAll is already closed")
	default:
	}
}
