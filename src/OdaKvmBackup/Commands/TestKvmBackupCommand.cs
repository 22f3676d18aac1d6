using System.Management.Automation;

namespace OdaKvmBackup.Commands;

/// <summary>
/// Re-reads every copy of a set from storage and compares it with the manifest, runs qemu-img check on qcow2
/// copies, and with -Boot starts a throw-away VM on temporary overlays of the copies to prove that the set boots.
/// </summary>
[Cmdlet(VerbsDiagnostic.Test, "KvmBackup", DefaultParameterSetName = InputObjectSet)]
[OutputType(typeof(BackupSetTestResult))]
public sealed class TestKvmBackupCommand : KvmCmdlet, IDisposable
{
    private const string InputObjectSet = "InputObject";
    private const string PathSet = "Path";
    private readonly StoreCache _stores;

    public TestKvmBackupCommand() => _stores = new StoreCache(() => Runner);

    [Parameter(Mandatory = true, ValueFromPipeline = true, ParameterSetName = InputObjectSet)]
    public BackupSetInfo InputObject { get; set; } = null!;

    /// <summary>A set's folder, or a destination (every set in it is tested).</summary>
    [Parameter(Mandatory = true, Position = 0, ParameterSetName = PathSet)]
    [ValidateNotNullOrEmpty]
    public string Path { get; set; } = "";

    [Parameter]
    public SwitchParameter Boot { get; set; }

    [Parameter]
    [ValidateRange(1, 86400)]
    public int BootTimeoutSec { get; set; } = 300;

    /// <summary>For a guest without a guest agent: the regular expression its serial console must show.</summary>
    [Parameter]
    [ValidateNotNullOrEmpty]
    public string ConsolePattern { get; set; } = "login:";

    protected override void Begin()
    {
        try
        {
            foreach (var cleaned in Run(ct => new BootTestService(Tools, Sink).CleanLeftoversAsync(ct)))
                WriteWarning($"Cleaned up after a boot test that did not finish: {cleaned}.");
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(new BackupException(ErrorIds.BootTestLeftover, ex.Category,
                $"Could not clean up after an earlier boot test: {ex.Message}", ex.RecommendedAction, ex.Target, ex)));
        }
        try
        {
            _ = new System.Text.RegularExpressions.Regex(ConsolePattern);
        }
        catch (ArgumentException ex)
        {
            ThrowTerminatingError(ToErrorRecord(ErrorIds.InvalidConsolePattern, BackupErrorCategory.InvalidArgument,
                $"-ConsolePattern '{ConsolePattern}' is not a regular expression: {ex.Message}", "Give a .NET regular expression, e.g. 'login:'.", ConsolePattern));
        }
    }

    protected override void ProcessRecord()
    {
        IReadOnlyList<BackupSetInfo> sets;
        try
        {
            var listing = ParameterSetName == PathSet
                ? Run(ct => SetResolver.ResolveAsync(_stores, ResolveLocation(Path), allowDestination: true, ct))
                : new CatalogListing([InputObject], []);
            foreach (var unreadable in listing.Unreadable)
                WriteError(ToErrorRecord(unreadable.Error, unreadable.Location));
            sets = listing.Sets;
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, Path));
            return;
        }
        foreach (var set in sets)
            TestOne(set);
    }

    private void TestOne(BackupSetInfo set)
    {
        BackupSetTestResult result;
        try
        {
            var store = _stores.Open(set.Destination, nameof(Path));
            result = Run(ct => new VerifyService(Tools.QemuImg, Sink).VerifyAsync(set, store, ct));
            if (Boot)
            {
                if (result.Passed)
                    Run(ct => new BootTestService(Tools, Sink).RunAsync(set, store, result, new BootTestOptions(TimeSpan.FromSeconds(BootTimeoutSec), ConsolePattern), ct));
                else
                    result.BootResult = "not booted: the set failed its checks";
            }
        }
        catch (BackupException ex)
        {
            WriteError(ToErrorRecord(ex, set.Location));
            return;
        }
        WriteObject(result);
        foreach (var error in result.Errors)
            WriteError(ToErrorRecord(error, result));
    }

    public void Dispose() => _stores.Dispose();
}
