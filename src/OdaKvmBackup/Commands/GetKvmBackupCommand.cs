using System.Management.Automation;

namespace OdaKvmBackup.Commands;

/// <summary>Lists the backup sets under a destination (a local folder, or user@host:/path), one object per set.</summary>
[Cmdlet(VerbsCommon.Get, "KvmBackup")]
[OutputType(typeof(BackupSetInfo))]
public sealed class GetKvmBackupCommand : KvmCmdlet, IDisposable
{
    private readonly StoreCache _stores;

    public GetKvmBackupCommand() => _stores = new StoreCache(() => Runner);

    /// <summary>The destination the sets were written to (Copy-VmDisk -Destination).</summary>
    [Parameter(Mandatory = true, Position = 0)]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    // No "Name" alias and no pipeline binding: bound by property name, it would take the Name of any object.
    [Parameter(Position = 1)]
    [SupportsWildcards]
    [ValidateNotNullOrEmpty]
    [ArgumentCompleter(typeof(Completion.DomainNameCompleter))]
    public string[]? DomainName { get; set; }

    /// <summary>Only the newest set of each domain (among those -Status keeps).</summary>
    [Parameter]
    public SwitchParameter Latest { get; set; }

    [Parameter]
    [ValidateSet(nameof(BackupSetStatus.Complete), nameof(BackupSetStatus.Incomplete), nameof(BackupSetStatus.InProgress))]
    public string[]? Status { get; set; }

    protected override void ProcessRecord()
    {
        var location = ResolveLocation(Path);
        var patterns = (DomainName ?? []).Select(n => WildcardPattern.Get(n, WildcardOptions.IgnoreCase)).ToList();
        try
        {
            var store = _stores.Open(location, nameof(Path));
            if (Run(ct => store.GetEntryAsync("", ct)) is not { IsFolder: true })
                throw new BackupException(ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound,
                    $"The destination '{store.Location}' does not exist or is not a folder.", "Name the folder backups were written to (Copy-VmDisk -Destination).", store.Location);
            var listing = Run(ct => BackupCatalog.ListAsync(store, name => patterns.Count == 0 || patterns.Any(p => p.IsMatch(name)), ct));
            foreach (var unreadable in listing.Unreadable)
                WriteError(ToErrorRecord(unreadable.Error, unreadable.Location));
            var now = DateTime.UtcNow;
            if (Latest)
                foreach (var future in listing.Sets.Where(s => BackupCatalog.IsInTheFuture(s, now)))
                    WriteWarning($"The set {future.Location} is dated in the future (its run id {future.RunId} is UTC; this host's clock says {now:yyyyMMdd-HHmmss}), so -Latest skipped it: it was not written tonight by this module on a host with a right clock. Find out who wrote it (a forged set, or a host whose clock ran ahead), then remove it by hand.");
            foreach (var set in BackupCatalog.Filter(listing.Sets, (Status ?? []).Select(s => Enum.Parse<BackupSetStatus>(s, ignoreCase: true)).ToList(), Latest, now))
                WriteObject(set);
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, location));
        }
    }

    public void Dispose() => _stores.Dispose();
}
