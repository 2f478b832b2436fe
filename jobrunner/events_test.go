package jobrunner

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
)

// Which events earn a line in an operation's log, and which are left out: stale ones, ones written already,
// and those the pod's own status reports better.
func TestEventLine(t *testing.T) {
	t.Parallel()
	since := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	ev := func(uid, kind, reason, typ string, count int32, at time.Time) *corev1.Event {
		return &corev1.Event{
			ObjectMeta:     metav1.ObjectMeta{UID: types.UID(uid)},
			InvolvedObject: corev1.ObjectReference{Kind: kind},
			Reason:         reason, Type: typ, Message: " the message \n", Count: count,
			LastTimestamp: metav1.NewTime(at),
		}
	}
	after := since.Add(time.Second)
	cases := []struct {
		name string
		seen map[types.UID]int32
		ev   *corev1.Event
		want string
	}{
		{name: "scheduled", ev: ev("a", "Pod", "Scheduled", corev1.EventTypeNormal, 1, after), want: "pod Scheduled: the message (Normal)"},
		{name: "scale-up", ev: ev("a", "Pod", "TriggeredScaleUp", corev1.EventTypeNormal, 1, after), want: "pod TriggeredScaleUp: the message (Normal)"},
		{name: "evicted", ev: ev("a", "Pod", "Evicted", corev1.EventTypeWarning, 1, after), want: "pod Evicted: the message (Warning)"},
		{name: "Job warning", ev: ev("a", "Job", "DeadlineExceeded", corev1.EventTypeWarning, 1, after), want: "job DeadlineExceeded: the message (Warning)"},
		{name: "other normal event", ev: ev("a", "Pod", "Pulled", corev1.EventTypeNormal, 1, after)},
		{name: "FailedScheduling: the pending report says it", ev: ev("a", "Pod", "FailedScheduling", corev1.EventTypeWarning, 1, after)},
		{name: "image BackOff: the pod's status says it", ev: ev("a", "Pod", "BackOff", corev1.EventTypeWarning, 1, after)},
		{name: "before supervision began", ev: ev("a", "Pod", "Evicted", corev1.EventTypeWarning, 1, since.Add(-time.Second))},
		{name: "no time: written", ev: ev("a", "Pod", "Evicted", corev1.EventTypeWarning, 0, time.Time{}), want: "pod Evicted: the message (Warning)"},
		{name: "written already", seen: map[types.UID]int32{"a": 2}, ev: ev("a", "Pod", "Killing", corev1.EventTypeNormal, 2, after)},
		{name: "repeated: written again", seen: map[types.UID]int32{"a": 2}, ev: ev("a", "Pod", "Killing", corev1.EventTypeNormal, 3, after), want: "pod Killing: the message (Normal)"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			seen := map[types.UID]int32{}
			for k, v := range tc.seen {
				seen[k] = v
			}
			if diff := cmp.Diff(tc.want, eventLine(tc.ev, since, seen)); diff != "" {
				t.Errorf("eventLine (-want +got):\n%s", diff)
			}
			if again := eventLine(tc.ev, since, seen); again != "" {
				t.Errorf("the same event is written twice: %q", again)
			}
		})
	}
}
