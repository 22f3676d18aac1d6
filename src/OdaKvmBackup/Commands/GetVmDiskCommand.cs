using System.Management.Automation;
using OdaKvmBackup.Core;
using OdaKvmBackup.Core.Backup;

namespace OdaKvmBackup.Commands;

/// <summary>Step 1: lists a domain's disks from its XML (CD-ROMs and floppies left out).</summary>
[Cmdlet(VerbsCommon.Get, "VmDisk")]
[OutputType(typeof(VmDisk))]
public sealed class GetVmDiskCommand : KvmCmdlet
{
    // No "Name" alias: bound by property name, it would take the Name of any object (a file from Get-ChildItem).
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [AllowEmptyString]
    public string[] DomainName { get; set; } = [];

    protected override void ProcessRecord()
    {
        foreach (var name in DomainName)
        {
            if (string.IsNullOrWhiteSpace(name))
            {
                WriteError(ToErrorRecord(ErrorIds.InvalidDomainName, BackupErrorCategory.InvalidArgument,
                    "A domain name is empty or blank.", "Name a domain as 'virsh list --all' shows it.", name));
                continue;
            }
            try
            {
                var domain = Run(ct => Tools.Virsh.DescribeAsync(name, ct));
                foreach (var disk in domain.Disks)
                    WriteObject(disk);
            }
            catch (BackupException ex)
            {
                WriteError(ToErrorRecord(ex, name));
            }
        }
    }
}
