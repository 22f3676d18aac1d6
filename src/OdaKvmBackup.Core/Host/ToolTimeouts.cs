using System.Text;
using CliWrap;

namespace OdaKvmBackup.Core.Host;

/// <summary>How long a native command may run. The default is generous (a healthy libvirtd answers in well under a
/// second) and can be set with $env:ODAKVMBACKUP_TOOL_TIMEOUT_SEC; commands that do long work get a multiple.</summary>
internal static class ToolTimeouts
{
    public const string EnvironmentVariable = "ODAKVMBACKUP_TOOL_TIMEOUT_SEC";

    /// <summary>Any virsh or qemu-img call: 300 s unless set otherwise.</summary>
    public static TimeSpan Default =>
        int.TryParse(Environment.GetEnvironmentVariable(EnvironmentVariable), System.Globalization.NumberStyles.Integer,
            System.Globalization.CultureInfo.InvariantCulture, out var seconds) && seconds > 0
            ? TimeSpan.FromSeconds(seconds) : TimeSpan.FromSeconds(300);

    /// <summary>Work that grows with the data (qemu-img commit of a shut-off domain's overlay): 100 times the default.</summary>
    public static TimeSpan LongWork => Default * 100;

    public static BackupException TimedOut(string commandLine, TimeSpan limit) =>
        new(ErrorIds.CommandTimedOut, BackupErrorCategory.OperationTimeout,
            $"'{commandLine}' did not finish within {limit.TotalSeconds:0} s and was stopped: libvirtd, QEMU or the guest agent may be hung.",
            $"Check that libvirtd answers (virsh list --all) and look at its log; then run Repair-KvmBackup if a backup was running. If the host is only slow, raise the limit: $env:{EnvironmentVariable} = 1200.");
}
