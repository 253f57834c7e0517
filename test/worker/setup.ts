import { setMetricsAlarms } from '../../workers/lib/metrics-flush.ts'

// Tests pin objects' alarms to their own deadlines, on clocks of their own; counts waiting to be
// sent would bring those alarms forward by the real clock. The tests of that turn it on
// (withMetricsAlarms in helpers/metrics-alarms.ts).
setMetricsAlarms(false)
