using System.Runtime.InteropServices;

namespace OdaKvmBackup.Commands;

/// <summary>
/// The module works on the KVM host (Linux with libvirt). Anywhere else (a Windows jump host) it imports for what
/// makes sense there: its help and the views of the objects that Invoke-Command brings back from the host; each
/// cmdlet then stops at once with the way to run it on the host (<see cref="KvmCmdlet"/>), rather than later with a
/// missing virsh. On a Linux machine without libvirt the cmdlets that need virsh say so (ToolNotFound).
/// </summary>
public static class KvmHostPlatform
{
    /// <summary>True where the cmdlets can work. A field, not a constant, so that a test can play a jump host.</summary>
    internal static bool IsKvmHost = OperatingSystem.IsLinux();

    public static string Refusal(string system) =>
        $"OdaKvmBackup runs on the KVM host (Linux with libvirt), not on {system}: here it only gives its help and shows what the host returns.";

    public const string HowToRunOnTheHost =
        "Run the command on the host through PowerShell remoting: " +
        "Invoke-Command -HostName oda1 -UserName root -ScriptBlock { Get-VmDisk vm1 | New-KvmDiskSnapshot | Copy-VmDisk -Destination /backup | Invoke-BlockCommit | Move-OverlayToRetention -Path /kvm/retencao } " +
        "(Get-Help about_OdaKvmBackup: 'From a Windows jump host').";

    internal static string SystemName => RuntimeInformation.OSDescription;
}
