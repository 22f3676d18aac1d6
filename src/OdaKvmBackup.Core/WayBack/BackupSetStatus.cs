using System.Text.Json;
using System.Text.Json.Serialization;

namespace OdaKvmBackup.Core.WayBack;

internal static class BackupSetStatus
{
    /// <summary>Being written, or its run was killed before it could say otherwise (Repair-KvmBackup then marks it Incomplete).</summary>
    public const string InProgress = "InProgress";
    /// <summary>Every disk the run backs up was copied and verified. Disks left out are listed in ExcludedDisks.</summary>
    public const string Complete = "Complete";
    /// <summary>The run failed or was stopped: never restore from it.</summary>
    public const string Incomplete = "Incomplete";
}
