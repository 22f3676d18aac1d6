using System.Management.Automation;

namespace OdaKvmBackup.Commands;

/// <summary>
/// Copies a set's disks into a folder (sparse, verified against the manifest), optionally defining a new domain on
/// them (-NewName, new UUID and MAC addresses, started only with -Start); or puts them back on a shut-off VM's own
/// paths (-InPlace -Force), keeping the replaced files aside.
/// </summary>
[Cmdlet(VerbsData.Restore, "KvmBackup", SupportsShouldProcess = true, ConfirmImpact = ConfirmImpact.Medium, DefaultParameterSetName = ToFolder)]
[OutputType(typeof(RestoredBackup))]
public sealed class RestoreKvmBackupCommand : KvmCmdlet, IDisposable
{
    private const string ToFolder = "ToFolder";
    private const string ToFolderFromPath = "ToFolderFromPath";
    private const string InPlaceSet = "InPlace";
    private const string InPlaceFromPath = "InPlaceFromPath";
    private readonly StoreCache _stores;

    public RestoreKvmBackupCommand() => _stores = new StoreCache(() => Runner);

    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = ToFolder)]
    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = InPlaceSet)]
    public BackupSetInfo InputObject { get; set; } = null!;

    /// <summary>The set's folder: &lt;destination&gt;/&lt;domain&gt;/&lt;yyyyMMdd-HHmmss&gt;.</summary>
    [Parameter(Mandatory = true, ParameterSetName = ToFolderFromPath)]
    [Parameter(Mandatory = true, ParameterSetName = InPlaceFromPath)]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ToFolder)]
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = ToFolderFromPath)]
    [ValidateNotNullOrEmpty]
    public string Destination { get; set; } = "";

    [Parameter(ParameterSetName = ToFolder)]
    [Parameter(ParameterSetName = ToFolderFromPath)]
    [ValidateNotNullOrEmpty]
    public string? NewName { get; set; }

    [Parameter(ParameterSetName = ToFolder)]
    [Parameter(ParameterSetName = ToFolderFromPath)]
    public SwitchParameter Start { get; set; }

    [Parameter(Mandatory = true, ParameterSetName = InPlaceSet)]
    [Parameter(Mandatory = true, ParameterSetName = InPlaceFromPath)]
    public SwitchParameter InPlace { get; set; }

    /// <summary>Raw disks are written fully allocated, as ODA keeps its vdisks.</summary>
    [Parameter]
    public SwitchParameter FullyAllocated { get; set; }

    [Parameter]
    public SwitchParameter Force { get; set; }

    protected override void Begin()
    {
        if (Start && NewName is null)
            ThrowTerminatingError(ToErrorRecord(ErrorIds.InvalidDomainName, BackupErrorCategory.InvalidArgument,
                "-Start starts the domain that -NewName defines; without -NewName there is none.", "Add -NewName <name>, or leave -Start out.", null));
    }

    protected override void ProcessRecord()
    {
        BackupSetInfo set;
        try
        {
            set = ParameterSetName is ToFolderFromPath or InPlaceFromPath
                ? Run(ct => SetResolver.ResolveAsync(_stores, ResolveLocation(Path), allowDestination: false, ct)).Sets[0]
                : InputObject;
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, Path));
            return;
        }
        var request = new RestoreRequest(InPlace ? null : ResolvePath(Destination), NewName, Start, FullyAllocated, Force, InPlace);
        var service = new RestoreService(Tools, Runner, Sink);
        try
        {
            var store = _stores.Open(set.Destination, nameof(Path));
            var plan = Run(ct => service.PlanAsync(set, store, request, ct));
            foreach (var note in plan.Notes)
                WriteWarning($"{plan.Request.NewName}: {note}");
            foreach (var left in plan.LeftOut)
                WriteVerbose($"{plan.Request.NewName}: {left}");
            var target = plan.Mode == RestoreMode.InPlace ? set.DomainName : plan.Request.NewName ?? plan.Folder!;
            if (!ShouldProcess(target, plan.Describe()))
                return;
            var restored = Run(ct => service.ExecuteAsync(plan, store, ct));
            if (restored.KeptAside.Count > 0)
                WriteWarning($"The files the restore replaced are kept until you remove them: {string.Join(", ", restored.KeptAside)}.");
            WriteObject(restored);
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, set.Location));
        }
    }

    public void Dispose() => _stores.Dispose();
}
