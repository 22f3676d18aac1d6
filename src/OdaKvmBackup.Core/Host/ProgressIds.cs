namespace OdaKvmBackup.Core.Host;

/// <summary>Progress ids, so that a rollback's bar never replaces a copy's.</summary>
internal static class ProgressIds
{
    public const int Copy = 41;
    public const int Commit = 51;
    public const int Repair = 61;
    public const int Rollback = 71;
    public const int Verify = 81;
    public const int Restore = 91;
    public const int BootTest = 101;
}
