// Package layout is the root of the script pod's own directories. It imports nothing, so that the chart's
// validation (chartgen) can keep a profile's mounts off them without depending on the runner; the directories
// under it are podrunner's.
package layout

// Root holds every directory the agent and the runner place in a script pod (podrunner.BinDir, WorkDir, ...).
const Root = "/octo"
