"""Launch the simulated Panda (PyBullet) and the diffusion controller driving it.

    ros2 launch diffusion_controller sim.launch.py [model:=/path/to/model_dir] seed:=3 \
        [task:=pick_place]

`sim_arm` publishes /joint_states, /camera/image_raw and /robot_description and tracks
/forward_position_controller/commands, exactly like the real arm's ros2_control stack, so the
controller runs with the same code and config/sim.yaml.
"""

from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import LifecycleNode, Node
from launch_ros.parameter_descriptions import ParameterValue
from launch_ros.substitutions import FindPackageShare

from diffusion_controller.settings.controller import SPECS
from launch import LaunchDescription


def generate_launch_description() -> LaunchDescription:
    share = FindPackageShare("diffusion_controller")
    args = [
        DeclareLaunchArgument(
            "model",
            default_value=PathJoinSubstitution([share, "models", "panda_reach_diffusion"]),
            description="Model artifact directory (default: the shipped Panda reaching policy).",
        ),
        DeclareLaunchArgument(
            "backend",
            default_value=SPECS["backend"].default,
            choices=list(SPECS["backend"].choices),
            description="Inference backend.",
        ),
        DeclareLaunchArgument(
            "params_file",
            default_value=PathJoinSubstitution([share, "config", "sim.yaml"]),
            description="Controller parameter file.",
        ),
        DeclareLaunchArgument("seed", default_value="0", description="Task seed of the sim."),
        DeclareLaunchArgument(
            "task",
            default_value="panda_reach",
            choices=["panda_reach", "pick_place"],
            description="Task of the sim (the model must be trained for it).",
        ),
        DeclareLaunchArgument("namespace", default_value="", description="Namespace of both."),
    ]
    sim = Node(
        package="diffusion_controller",
        executable="sim_arm",
        name="sim_arm",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        parameters=[
            {
                "seed": ParameterValue(LaunchConfiguration("seed"), value_type=int),
                "task": ParameterValue(LaunchConfiguration("task"), value_type=str),
            }
        ],
    )
    controller = LifecycleNode(
        package="diffusion_controller",
        executable="controller",
        name="diffusion_controller",
        namespace=LaunchConfiguration("namespace"),
        output="screen",
        emulate_tty=True,
        parameters=[
            LaunchConfiguration("params_file"),
            {
                "model_path": ParameterValue(LaunchConfiguration("model"), value_type=str),
                "backend": ParameterValue(LaunchConfiguration("backend"), value_type=str),
            },
        ],
    )
    return LaunchDescription([*args, sim, controller])
