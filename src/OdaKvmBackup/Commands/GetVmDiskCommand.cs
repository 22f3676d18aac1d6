using System.Management.Automation;
using OdaKvmBackup.Completion;

namespace OdaKvmBackup.Commands;

/// <summary>Step 1: lists a domain's disks from its XML (CD-ROMs and floppies left out).</summary>
[Cmdlet(VerbsCommon.Get, "VmDisk")]
[OutputType(typeof(VmDisk))]
public sealed class GetVmDiskCommand : KvmCmdlet
{
    // No "Name" alias: bound by property name, it would take the Name of any object (a file from Get-ChildItem).
    [Parameter(Mandatory = true, Position = 0, ValueFromPipeline = true, ValueFromPipelineByPropertyName = true)]
    [AllowEmptyString]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(DomainNameCompleter))]
    public string[] DomainName { get; set; } = [];

    /// <summary>Only these disks (vda, vd[bc] ...); all of them when left out.</summary>
    [Parameter]
    [SupportsWildcards]
    [ArgumentCompleter(typeof(DiskTargetCompleter))]
    public string[]? Target { get; set; }

    protected override void ProcessRecord()
    {
        foreach (var name in ExpandDomainNames(DomainName))
        {
            try
            {
                var domain = Run(ct => Tools.Virsh.DescribeAsync(name, ct));
                var disks = domain.Disks.Where(d => Target is null || Target.Any(t => new WildcardPattern(t, WildcardOptions.IgnoreCase).IsMatch(d.Target))).ToList();
                if (disks.Count == 0 && Target is not null)
                {
                    WriteError(ToErrorRecord(ErrorIds.DiskNotFound, BackupErrorCategory.ObjectNotFound,
                        $"'{name}' has no disk matching {string.Join(", ", Target)} (its disks: {string.Join(", ", domain.Disks.Select(d => d.Target))}).",
                        $"Name a target as 'Get-VmDisk {name}' lists it.", name));
                }
                foreach (var disk in disks)
                    WriteObject(disk);
            }
            catch (BackupException ex)
            {
                WriteError(ToErrorRecord(ex, name));
            }
        }
    }
}
