using System.Management.Automation;
using System.Runtime.InteropServices;

namespace OdaKvmBackup.Commands;

/// <summary>
/// The module works on the KVM host. Imported anywhere else (a Windows jump host), it stops at once with the way to
/// use it from there, rather than later with a missing virsh. On a Linux machine without libvirt it loads: the
/// cmdlets that need virsh say so (ToolNotFound) when they run.
/// </summary>
public sealed class ModuleInitializer : IModuleAssemblyInitializer
{
    public void OnImport()
    {
        if (!OperatingSystem.IsLinux())
            throw new PlatformNotSupportedException(Refusal(RuntimeInformation.OSDescription));
    }

    public static string Refusal(string system) =>
        $"OdaKvmBackup runs on the KVM host (Linux with libvirt), not on {system}. From this machine, run it on the host through PowerShell remoting: " +
        "Invoke-Command -HostName oda1 -UserName root -ScriptBlock { Import-Module OdaKvmBackup; Get-VmDisk vm1 | New-KvmDiskSnapshot | Copy-VmDisk -Destination /backup | Invoke-BlockCommit | Move-OverlayToRetention -Path /kvm/retencao } " +
        "(Get-Help about_OdaKvmBackup: 'From a Windows jump host').";
}
